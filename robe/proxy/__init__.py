"""The hybrid-access proxies of experiment 2 (paper Figure 7).

``client_proxy``: a transparent proxy in the client's namespace (iptables REDIRECT) that opens one
multipath connection per TCP connection to the HAAP, with any RobE strategy; ``haap``: the Hybrid
Access Aggregation Point, which terminates those connections and opens plain TCP to the origin.
The original destination rides with the first data in a Convert header (``convert``), so the
proxies add no round trip.
"""
