# xlb's fixtures (xlb_balancer, xlb_lab, ...) are opt-in.
pytest_plugins = ["xlb.testing.plugin"]
