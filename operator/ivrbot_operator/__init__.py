"""kopf operator that turns IVRBot resources into bot pods."""
