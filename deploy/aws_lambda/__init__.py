"""AWS Lambda entry point for the inference endpoint (Function URL / API Gateway events)."""
