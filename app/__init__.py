"""Real-time card-fraud detection on Kafka with Faust, scikit-learn, Redis and Prometheus."""

__version__ = "0.1.0"
