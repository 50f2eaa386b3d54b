"""Device meshes and logical-axis sharding rules (data / fsdp / tensor)."""
