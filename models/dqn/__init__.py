"""The dueling double DQN: network, prioritised replay, agent."""
