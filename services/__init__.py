"""What every door (command line, demo, benchmarks, tests; later the console and the API)
does the same way: enrolment, announcing a closure. Above the workflows, below the doors."""
