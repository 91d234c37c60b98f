"""WebRTC pieces shared by the gateway, JIT workers and the stitcher's WHEP output: TURN, SDP,
ICE configuration and H.264 High profile for aiortc."""
