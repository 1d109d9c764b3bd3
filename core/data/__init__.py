"""Data a recipe trains on: records and their checks, images, video, and how big an image is as the model sees it."""
