"""The COB model: order-book actor-critic network, agent."""
