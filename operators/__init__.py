"""What operators read out of CarePath: exports of a patient's journey for other systems."""
