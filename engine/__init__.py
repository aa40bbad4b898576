"""vr-engine: an open virtual receptionist server."""
