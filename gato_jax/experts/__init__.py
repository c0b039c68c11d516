"""Expert policies that generate Gato's training data: trainers, recipes' runners, storage."""
