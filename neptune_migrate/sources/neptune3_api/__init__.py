"""Live self-hosted Neptune 3.x servers, read through the real neptune-query client."""
