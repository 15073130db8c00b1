"""One module per stage; each defines the stage\x27s plain typed function."""
