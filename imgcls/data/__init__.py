"""Datasets, the one evaluation transform and image statistics. Importing this package never imports torch."""
