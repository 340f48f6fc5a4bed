"""The simulated clinic the tests, the demo and the benchmarks share: its patients (who they
are and how they attend), its case managers, the telephony that calls the patients and the
partner services it refers them to. Above the workflows: it drives journeys as a clinic
would, through the same updates, and stands in for the providers behind the activities."""
