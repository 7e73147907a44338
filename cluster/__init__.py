"""GKE helpers: the rollout of the API Deployment, superseded runs, event routing, the failure email, the setup script."""
