"""The platform server (``lepton server``): REST API, jobs, deployments, users, dashboard."""
