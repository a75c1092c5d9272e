"""The `charge-flip` generator: charge flipping, origin search and peak interpretation."""
