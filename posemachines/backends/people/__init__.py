"""Finding people: the person-centre network of CPM's release (a belief map whose peaks are
people's centres) with a box size read out at each centre, as CenterNet does. Its model is
not a pose model: ``pm predict``/``evaluate --people`` crop every person it finds for one.
torch is imported only when it is trained or loaded."""
