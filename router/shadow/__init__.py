"""Shadow mode: the bounded mirror of requests and the challenger's process that scores them."""
