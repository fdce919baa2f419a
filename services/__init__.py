"""One package per service: a pure domain module, thin handlers, and a composition root."""
