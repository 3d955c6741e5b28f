"""Reading RAW files and writing images: everything that touches a file format."""
