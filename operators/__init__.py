"""Operators' views over the whole caseload: reports read from the care-operations store."""
