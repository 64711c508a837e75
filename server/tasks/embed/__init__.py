"""The clip encoder (VideoMAE V2) as a task: clip embeddings and Kinetics-400 labels."""
