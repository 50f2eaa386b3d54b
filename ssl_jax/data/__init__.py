"""Audio data: the embedded eSpeak NG corpus, shard preparation, the Grain pipeline and features."""
