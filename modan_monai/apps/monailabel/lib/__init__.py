"""The app's tasks: the served bundles, request handling, segmentation / classification inference, training."""
