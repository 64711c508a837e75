"""Clip jobs: whole videos run in the background at batch priority."""
