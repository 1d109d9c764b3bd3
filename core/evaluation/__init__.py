"""Evaluation shared by every recipe's evaluate.py: loading a run back and the common command line."""
