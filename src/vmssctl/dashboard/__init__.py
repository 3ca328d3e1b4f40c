"""The web console: live heatmap, operations and rollouts for scale sets."""
