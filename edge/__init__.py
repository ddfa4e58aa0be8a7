"""The edge node: records RTSP cameras into fragmented-MP4 segments with a SQLite catalog."""
