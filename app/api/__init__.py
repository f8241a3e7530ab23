"""HTTP wiring shared by the resource routers."""
