"""What a run shows and keeps: experiment loggers, the TensorBoard layout, history.jsonl
and the console."""
