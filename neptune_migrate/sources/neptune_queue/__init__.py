"""neptune 1.x `.neptune` offline and async operation queues."""
