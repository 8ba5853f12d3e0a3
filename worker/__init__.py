"""Clinical scribe pipeline worker: RabbitMQ consumers driving transcribe, poll, summarize, note."""
