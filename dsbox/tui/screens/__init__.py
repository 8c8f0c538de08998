"""The app's screens: the main one (dashboard beside the chat) and the help screen."""
