"""Missing-points claims: a member claims an earn a partner did not post; the partner
confirms (the earn is booked) or refuses it."""
