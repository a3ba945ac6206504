"""Output, the end of the flow: video files, image folders and per-frame logs written locally."""
