"""Live self-hosted Neptune 2.x servers, read through the real `neptune` 1.x client."""
