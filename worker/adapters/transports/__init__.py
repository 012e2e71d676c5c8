"""EPJ transports: how documents reach clinic queues and come back."""
