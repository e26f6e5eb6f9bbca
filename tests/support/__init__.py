"""Test harness: real servers, a realistic data set, a fault-injecting proxy."""
