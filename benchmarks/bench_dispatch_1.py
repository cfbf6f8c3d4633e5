"""Question "dispatch_1": one hook call with 1 plugin(s) through the host against bare pluggy."""

from _dispatch_bench import main

if __name__ == "__main__":
    main(1)
