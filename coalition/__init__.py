"""Coalition: a coalition loyalty platform with one shared point currency."""
