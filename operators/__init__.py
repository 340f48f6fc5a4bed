"""What operators read out of CarePath: outcome reports over a caseload and exports of a
patient's journey for other systems."""
