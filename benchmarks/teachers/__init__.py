"""Teachers a user has rather than one lelp trains: what distillation gains when the teacher gives less than logits."""
