"""Drift: a reference made with the model at training, and reports over the server's own traffic.

``reference`` (train side, torch) builds the reference; ``columns`` holds the scores and calibrated
thresholds; ``report`` (torch-free) reads prediction logs or image folders and runs the evidently report.
"""
