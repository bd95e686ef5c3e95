"""Audio sample formats: G.711 mu-law and low-latency streaming resampling."""
