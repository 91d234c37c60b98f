"""WebRTC pieces shared by the gateway and JIT workers: TURN and SDP."""
