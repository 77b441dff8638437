"""The generated datasets: a fake LIVECell release and a fake CLANet time-lapse release."""
