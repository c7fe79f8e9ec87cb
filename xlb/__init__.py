"""xlb: an XDP L4 load balancer with a Python control plane."""
