"""supervisor: the red lines, enforced by code — protection, idea audits, result checks, certification."""
