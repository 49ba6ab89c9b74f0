"""The read side: everything that reads stored traces (the viewer; search, consumer and CLI move here)."""
