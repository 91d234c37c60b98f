"""Segments and playlists: the live HLS playlist of a mosaic, written by the stitcher and served
by the gateway."""
