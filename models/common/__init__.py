"""What every model shares: the agent base, checkpoints, device, optimizer, schema, inputs."""
