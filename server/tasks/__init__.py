"""What each task does with its engine: the pipeline between decoded frames and results."""
