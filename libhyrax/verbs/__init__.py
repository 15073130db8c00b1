"""One module per stage; each defines the stage's plain typed function."""
